// The one typed REST client. Same origin: paths are relative (`/v1/...`), the gateway serves
// this app. A session authenticates with `Authorization: Bearer <token>` (no X-TS needed);
// every POST and DELETE carries a fresh `Idempotency-Key` (the gateway refuses them without).
import type {
  AccountTradesPage,
  AccountTradesQuery,
  ApiKeyCreated,
  ApiKeyList,
  BalancesResponse,
  BookSnapshot,
  CancelAllResponse,
  CandlesResponse,
  Interval,
  LoginResponse,
  MarketsResponse,
  MeResponse,
  Order,
  OrdersPage,
  OrdersQuery,
  PlaceOrder,
  SignupResponse,
  Ticker,
  TimeResponse,
  TradesResponse,
  Transfer,
  TransferRequest,
  TransfersPage,
  TransfersQuery,
} from "./types";

/** A refusal: the API's `{code, message}` (or `network_error` / `http_<status>`). */
export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
  ) {
    super(message);
  }

  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

/** A key the gateway accepts (at most 64 printable characters). getRandomValues, unlike
 * randomUUID, also exists outside secure contexts (plain http to a non-local host). */
export function idempotencyKey(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

type Query = Record<string, string | number | null | undefined>;

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

export interface Transport {
  (input: string, init: RequestInit): Promise<Response>;
}

interface Call {
  method?: "GET" | "POST" | "DELETE";
  query?: Query;
  body?: unknown;
  auth?: boolean;
}

export class Client {
  private token: string | null = null;
  /** Called when the gateway says the session is gone (`invalid_session`). */
  onSessionLost: (() => void) | null = null;

  constructor(private readonly transport: Transport = (input, init) => fetch(input, init)) {}

  setToken(token: string | null): void {
    this.token = token;
  }

  async call<T>(path: string, { method = "GET", query, body, auth = false }: Call = {}): Promise<T> {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["Idempotency-Key"] = idempotencyKey();
    if (auth) {
      if (!this.token) throw new ApiError("missing_credentials", "log in first", 401);
      headers.Authorization = `Bearer ${this.token}`;
    }
    let response: Response;
    try {
      response = await this.transport(withQuery(path, query), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (exc) {
      throw new ApiError("network_error", `the gateway is unreachable (${String(exc)})`, 0);
    }
    const text = await response.text();
    let value: unknown = undefined;
    try {
      value = text ? JSON.parse(text) : undefined;
    } catch {
      value = undefined;
    }
    if (!response.ok) {
      const error = errorOf(value, response.status);
      if (auth && error.code === "invalid_session") this.onSessionLost?.();
      throw error;
    }
    return value as T;
  }

  // ---------------------------------------------------------------- auth and keys

  signup(email: string, password: string): Promise<SignupResponse> {
    return this.call("/v1/auth/signup", { method: "POST", body: { email, password } });
  }
  login(email: string, password: string): Promise<LoginResponse> {
    return this.call("/v1/auth/login", { method: "POST", body: { email, password } });
  }
  me(): Promise<MeResponse> {
    return this.call("/v1/auth/me", { auth: true });
  }
  logout(): Promise<unknown> {
    return this.call("/v1/auth/logout", { method: "POST", auth: true });
  }
  createKey(label: string): Promise<ApiKeyCreated> {
    return this.call("/v1/api-keys", { method: "POST", body: { label }, auth: true });
  }
  listKeys(): Promise<ApiKeyList> {
    return this.call("/v1/api-keys", { auth: true });
  }
  revokeKey(apiKey: string): Promise<unknown> {
    const path = `/v1/api-keys/${encodeURIComponent(apiKey)}`;
    return this.call(path, { method: "DELETE", auth: true });
  }

  // ---------------------------------------------------------------- market data (public)

  markets(): Promise<MarketsResponse> {
    return this.call("/v1/markets");
  }
  time(): Promise<TimeResponse> {
    return this.call("/v1/time");
  }
  ticker(symbol: string): Promise<Ticker> {
    return this.call(`/v1/markets/${encodeURIComponent(symbol)}/ticker`);
  }
  orderbook(symbol: string, depth = 50): Promise<BookSnapshot> {
    return this.call(`/v1/markets/${encodeURIComponent(symbol)}/orderbook`, { query: { depth } });
  }
  trades(symbol: string, limit = 50): Promise<TradesResponse> {
    return this.call(`/v1/markets/${encodeURIComponent(symbol)}/trades`, { query: { limit } });
  }
  candles(symbol: string, interval: Interval, limit = 300): Promise<CandlesResponse> {
    const path = `/v1/markets/${encodeURIComponent(symbol)}/candles`;
    return this.call(path, { query: { interval, limit } });
  }

  // ---------------------------------------------------------------- account and orders

  balances(): Promise<BalancesResponse> {
    return this.call("/v1/account/balances", { auth: true });
  }
  orders(query: OrdersQuery): Promise<OrdersPage> {
    return this.call("/v1/orders", { query, auth: true });
  }
  accountTrades(query: AccountTradesQuery): Promise<AccountTradesPage> {
    return this.call("/v1/account/trades", { query, auth: true });
  }
  place(order: PlaceOrder): Promise<Order> {
    return this.call("/v1/orders", { method: "POST", body: order, auth: true });
  }
  cancel(orderId: string): Promise<Order> {
    const path = `/v1/orders/${encodeURIComponent(orderId)}`;
    return this.call(path, { method: "DELETE", auth: true });
  }
  cancelAll(symbol: string): Promise<CancelAllResponse> {
    return this.call("/v1/orders", { method: "DELETE", query: { symbol }, auth: true });
  }

  // ---------------------------------------------------------------- wallet

  /** Moves funds between the wallet and a market (answered 202 once the matcher has, usually). */
  transfer(request: TransferRequest): Promise<Transfer> {
    return this.call("/v1/account/transfers", { method: "POST", body: request, auth: true });
  }
  transfers(query: TransfersQuery): Promise<TransfersPage> {
    return this.call("/v1/account/transfers", { query, auth: true });
  }
}

/** The typed error of a failed answer (`{code, message}`, also when nested under `error`). */
export function errorOf(value: unknown, status: number): ApiError {
  const body =
    value && typeof value === "object" && "error" in value && typeof value.error === "object"
      ? value.error
      : value;
  if (body && typeof body === "object" && "code" in body && typeof body.code === "string") {
    const message = "message" in body && typeof body.message === "string" ? body.message : "";
    return new ApiError(body.code, message, status);
  }
  return new ApiError(`http_${status}`, `the gateway answered HTTP ${status}`, status);
}

// The API's types, all taken from the generated schema.d.ts (`npm run gen:api`); none is
// written by hand, so a change of the gateway's document breaks the build where it matters.
import type { components, paths } from "./schema";

type Schemas = components["schemas"];

export type Order = Schemas["Order"];
export type OrderRow = Schemas["OrderSummary"];
export type Fill = Schemas["Fill"];
export type AccountTrade = Schemas["AccountFill"];
export type Trade = Schemas["Trade"];
export type Candle = Schemas["Candle"];
export type Ticker = Schemas["Ticker"];
export type BookSnapshot = Schemas["Book"];
export type Balance = Schemas["Balance"];
export type Transfer = Schemas["Transfer"];
export type Market = Schemas["Market"];
export type ApiErrorBody = Schemas["Error"];
/** A mode from GET /v1/markets; the socket may name one this build does not know yet. */
export type MarketMode = Market["mode"] | (string & {});

type Json<R> = R extends { content: { "application/json": infer B } } ? B : never;
/** The JSON body of a 200 or 201 answer in a generated operation's responses. */
type OkBody<R> = R extends { 200: infer A } ? Json<A> : R extends { 201: infer B } ? Json<B> : never;
type Op = { responses: unknown };
type Ok<P extends keyof paths, M extends "get" | "post" | "delete"> = paths[P][M] extends Op
  ? OkBody<paths[P][M]["responses"]>
  : never;
type QueryOf<P extends keyof paths, M extends "get" | "delete"> = paths[P][M] extends {
  parameters: { query?: infer Q };
}
  ? NonNullable<Q>
  : never;

export type MarketsResponse = Ok<"/v1/markets", "get">;
export type TimeResponse = Ok<"/v1/time", "get">;
export type OrdersPage = Ok<"/v1/orders", "get">;
export type OrdersQuery = QueryOf<"/v1/orders", "get">;
export type CancelAllResponse = Ok<"/v1/orders", "delete">;
export type AccountTradesPage = Ok<"/v1/account/trades", "get">;
export type AccountTradesQuery = QueryOf<"/v1/account/trades", "get">;
export type SignupResponse = Ok<"/v1/auth/signup", "post">;
export type LoginResponse = Ok<"/v1/auth/login", "post">;
export type MeResponse = Ok<"/v1/auth/me", "get">;
export type ApiKeyCreated = Ok<"/v1/api-keys", "post">;
export type ApiKeyList = Ok<"/v1/api-keys", "get">;
export type BalancesResponse = Ok<"/v1/account/balances", "get">;
export type TransfersPage = Ok<"/v1/account/transfers", "get">;
export type TransfersQuery = QueryOf<"/v1/account/transfers", "get">;
export type TradesResponse = Ok<"/v1/markets/{symbol}/trades", "get">;
export type CandlesResponse = Ok<"/v1/markets/{symbol}/candles", "get">;

type PlaceBody = NonNullable<paths["/v1/orders"]["post"]["requestBody"]>["content"];
export type PlaceOrder = PlaceBody["application/json"];
type TransferBody = NonNullable<paths["/v1/account/transfers"]["post"]["requestBody"]>["content"];
export type TransferRequest = TransferBody["application/json"];
export type TransferDirection = Transfer["direction"];

export type Side = NonNullable<Order["side"]>;
export type OrderType = NonNullable<Order["type"]>;
export type TimeInForce = NonNullable<Order["time_in_force"]>;
export type Interval = Candle["interval"];
export const INTERVALS: readonly Interval[] = ["1m", "5m", "15m", "1h", "4h", "1d", "1w"];

// The app's services (REST client, socket, cache) and the session, provided once at the
// root. The session token lives in memory and in sessionStorage (gone with the tab), never
// in localStorage.
import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";
import { Client } from "../api/client";
import { Socket, type SocketStatus } from "../ws/socket";
import { Cache } from "./cache";

export interface Services {
  client: Client;
  socket: Socket;
  cache: Cache;
}

const ServicesContext = createContext<Services | null>(null);

export function useServices(): Services {
  const services = useContext(ServicesContext);
  if (!services) throw new Error("useServices outside <ServicesProvider>");
  return services;
}

export function useSocketStatus(): SocketStatus {
  const { socket } = useServices();
  return useSyncExternalStore(
    (listener) => socket.onStatus(listener),
    () => socket.status,
  );
}

// ------------------------------------------------------------------ session

const STORAGE_KEY = "exchange.session";

export interface Session {
  token: string;
  email: string | null;
  account: string | null;
}

interface SessionApi {
  session: Session | null;
  login: (email: string, password: string) => Promise<void>;
  logout: () => Promise<void>;
}

const SessionContext = createContext<SessionApi | null>(null);

export function useSession(): SessionApi {
  const api = useContext(SessionContext);
  if (!api) throw new Error("useSession outside <ServicesProvider>");
  return api;
}

function stored(): Session | null {
  try {
    const raw = window.sessionStorage.getItem(STORAGE_KEY);
    const value = raw ? (JSON.parse(raw) as Partial<Session>) : null;
    return value && typeof value.token === "string"
      ? { token: value.token, email: value.email ?? null, account: value.account ?? null }
      : null;
  } catch {
    return null;
  }
}

function store(session: Session | null): void {
  try {
    if (session) window.sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
    else window.sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    /* storage disabled: the session lives in memory only */
  }
}

export function ServicesProvider({
  services,
  children,
}: {
  services: Services;
  children: ReactNode;
}) {
  const { client, socket, cache } = services;
  const [session, setSession] = useState<Session | null>(() => {
    const found = stored();
    client.setToken(found?.token ?? null);
    socket.setToken(found?.token ?? null);
    return found;
  });

  const apply = useCallback(
    (next: Session | null) => {
      client.setToken(next?.token ?? null);
      socket.setToken(next?.token ?? null);
      store(next);
      if (!next) cache.clear("me:");
      setSession(next);
    },
    [client, socket, cache],
  );

  useEffect(() => {
    client.onSessionLost = () => apply(null);
    return () => {
      client.onSessionLost = null;
    };
  }, [client, apply]);

  useEffect(() => {
    socket.start();
    return () => socket.stop();
  }, [socket]);

  // A stored session is checked once (expired or logged out elsewhere: dropped).
  const token = session?.token;
  useEffect(() => {
    if (!token) return;
    client.me().then(
      (me) =>
        setSession((s) => {
          if (!s || s.token !== token) return s;
          const next = { token, email: me.email ?? s.email, account: me.account };
          store(next);
          return next;
        }),
      () => {
        /* invalid_session already logged out through onSessionLost */
      },
    );
  }, [client, token]);

  const login = useCallback(
    async (email: string, password: string) => {
      const answer = await client.login(email, password);
      apply({ token: answer.token, email, account: answer.account });
    },
    [client, apply],
  );

  const logout = useCallback(async () => {
    try {
      await client.logout();
    } finally {
      apply(null);
    }
  }, [client, apply]);

  const api = useMemo(() => ({ session, login, logout }), [session, login, logout]);
  return (
    <ServicesContext.Provider value={services}>
      <SessionContext.Provider value={api}>{children}</SessionContext.Provider>
    </ServicesContext.Provider>
  );
}

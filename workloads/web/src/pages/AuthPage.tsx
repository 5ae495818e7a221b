import { useId, useState, type FormEvent } from "react";
import type { ApiError } from "../api/client";
import { ErrorText } from "../components/ErrorText";
import { href, navigate } from "../router";
import { useServices, useSession } from "../state/services";

/** Log in, or sign up (then log in with the same credentials). */
export function AuthPage({ mode }: { mode: "login" | "signup" }) {
  const { client } = useServices();
  const { login } = useSession();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const id = useId();
  const signup = mode === "signup";

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (signup) await client.signup(email, password);
      await login(email, password);
      navigate({ page: "markets" });
    } catch (exc) {
      setError(exc as ApiError);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="page narrow">
      <h1>{signup ? "Sign up" : "Log in"}</h1>
      <form onSubmit={submit} className="panel auth" aria-label={signup ? "Sign up" : "Log in"}>
        <div className="row">
          <label htmlFor={`${id}-email`}>Email</label>
          <input
            id={`${id}-email`}
            type="email"
            autoComplete="username"
            required
            value={email}
            onChange={(e) => setEmail(e.target.value)}
          />
        </div>
        <div className="row">
          <label htmlFor={`${id}-password`}>Password</label>
          <input
            id={`${id}-password`}
            type="password"
            autoComplete={signup ? "new-password" : "current-password"}
            required
            minLength={signup ? 8 : undefined}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </div>
        {signup && <p className="note">8 to 128 characters.</p>}
        <button type="submit" disabled={busy}>
          {signup ? "Sign up" : "Log in"}
        </button>
        <ErrorText error={error} testId="auth-error" />
        <p className="note">
          {signup ? (
            <a href={href({ page: "login" })}>I have an account: log in</a>
          ) : (
            <a href={href({ page: "signup" })}>No account yet: sign up</a>
          )}
        </p>
      </form>
    </main>
  );
}

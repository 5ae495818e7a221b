import { useId, useState, type FormEvent } from "react";
import type { ApiError } from "../api/client";
import type { ApiKeyCreated } from "../api/types";
import { Balances, Transfers } from "../components/AccountTables";
import { ErrorText } from "../components/ErrorText";
import { stamp } from "../lib/format";
import { href } from "../router";
import { useApiKeys, useBalances } from "../state/account";
import { useMarkets } from "../state/market";
import { useServices, useSession } from "../state/services";

function ApiKeys() {
  const { client, cache } = useServices();
  const keys = useApiKeys();
  const [label, setLabel] = useState("");
  const [created, setCreated] = useState<ApiKeyCreated | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const id = useId();

  const act = async (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await action();
      cache.invalidate("me:keys");
    } catch (exc) {
      setError(exc as ApiError);
    } finally {
      setBusy(false);
    }
  };
  const create = (event: FormEvent) => {
    event.preventDefault();
    void act(async () => {
      setCreated(await client.createKey(label));
      setLabel("");
    });
  };

  return (
    <section className="panel" aria-label="API keys panel">
      <header className="panel-head">
        <h2>API keys</h2>
      </header>
      <form onSubmit={create} className="inline">
        <label htmlFor={`${id}-label`}>Label</label>
        <input
          id={`${id}-label`}
          maxLength={100}
          value={label}
          onChange={(e) => setLabel(e.target.value)}
        />
        <button type="submit" disabled={busy}>
          Create API key
        </button>
      </form>
      {created && (
        <div className="secret" role="status" data-testid="api-key-created">
          <p>
            Key <code data-testid="api-key-id">{created.api_key}</code>, secret{" "}
            <code data-testid="api-key-secret">{created.secret}</code>
          </p>
          <p className="warn">
            The secret is shown this once: copy it now. Sign requests with it (see the gateway's
            README).
          </p>
          <button type="button" onClick={() => setCreated(null)}>
            I have copied it
          </button>
        </div>
      )}
      <ErrorText error={error ?? keys.error} testId="api-key-error" />
      <table aria-label="API keys">
        <thead>
          <tr>
            <th scope="col">Key</th>
            <th scope="col">Label</th>
            <th scope="col">Created</th>
            <th scope="col">Revoked</th>
            <th scope="col"><span className="sr-only">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          {(keys.data?.keys ?? []).map((k) => (
            <tr key={k.api_key} data-api-key={k.api_key}>
              <td>
                <code>{k.api_key}</code>
              </td>
              <td>{k.label}</td>
              <td>{stamp(k.created_at)}</td>
              <td>{k.revoked_at ? stamp(k.revoked_at) : "—"}</td>
              <td>
                {!k.revoked_at && (
                  <button
                    type="button"
                    aria-label={`Revoke ${k.api_key}`}
                    disabled={busy}
                    onClick={() => void act(async () => void (await client.revokeKey(k.api_key)))}
                  >
                    Revoke
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function AccountPage() {
  const { session } = useSession();
  const balances = useBalances();
  const markets = useMarkets();
  if (!session) {
    return (
      <main className="page narrow">
        <h1>Account</h1>
        <p>
          <a href={href({ page: "login" })}>Log in</a> to see your balances and API keys.
        </p>
      </main>
    );
  }
  const places: Record<string, number> = {};
  for (const m of markets.data?.markets ?? []) {
    places[m.base_asset] = m.base_decimals;
    places[m.quote_asset] = m.quote_decimals;
  }
  return (
    <main className="page">
      <h1>Account</h1>
      <p>
        {session.email} · account <code>{session.account}</code>
      </p>
      <div className="account-grid">
        <Balances balances={balances.data?.balances} error={balances.error} places={places} />
        <Transfers places={places} />
        <ApiKeys />
      </div>
    </main>
  );
}

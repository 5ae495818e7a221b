// The transfer form: moves funds between the wallet and this market. What the trader types
// is the only state here; the amount's rules and what it is taken from come from
// lib/transferForm.ts. Deposits land in the wallet, which no market's halt can freeze; the
// trader chooses what to put at a market's risk.
import { useId, useState, type FormEvent } from "react";
import { ApiError } from "../api/client";
import type { Balance, Market, Transfer, TransferDirection, TransferRequest } from "../api/types";
import { display } from "../lib/decimal";
import {
  assetDecimals,
  emptyTransfer,
  isShortOf,
  prepareTransfer,
  sourceOf,
  type TransferDraft,
} from "../lib/transferForm";

export interface TransferFormProps {
  market: Market;
  balances: readonly Balance[] | undefined;
  /** sends the transfer; resolves with the API's answer, rejects with an ApiError */
  transfer: (request: TransferRequest) => Promise<Transfer>;
}

const DIRECTIONS: readonly { value: TransferDirection; label: string }[] = [
  { value: "to_market", label: "To market" },
  { value: "to_wallet", label: "To wallet" },
];

export function TransferForm({ market, balances, transfer }: TransferFormProps) {
  const [draft, setDraft] = useState<TransferDraft>(() => emptyTransfer(market));
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState<Transfer | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const id = useId();
  const set = (change: Partial<TransferDraft>) => setDraft((d) => ({ ...d, ...change }));

  const prepared = prepareTransfer(market, draft);
  const places = assetDecimals(market, draft.asset);
  const source = sourceOf(balances, market.symbol, draft.asset, draft.direction);
  const short = isShortOf(prepared.request, source);
  const from = draft.direction === "to_market" ? "wallet" : market.symbol;

  async function submit(event: FormEvent) {
    event.preventDefault();
    if (!prepared.request || busy) return;
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      const answer = await transfer(prepared.request);
      setDone(answer);
      if (answer.status === "rejected") {
        const code = answer.reject_reason ?? "rejected";
        setError(new ApiError(code, `the matcher rejected transfer ${answer.transfer_id}`, 202));
      } else {
        set({ amount: "" });
      }
    } catch (exc) {
      setError(exc as ApiError);
    } finally {
      setBusy(false);
    }
  }

  const f = (name: string) => `${id}-${name}`;
  return (
    <section className="panel" aria-label="Transfer form">
      <header className="panel-head">
        <h2>Transfer</h2>
      </header>
      <form onSubmit={submit} noValidate>
        <div className="row">
          <label htmlFor={f("asset")}>Asset</label>
          <select id={f("asset")} value={draft.asset} onChange={(e) => set({ asset: e.target.value })}>
            <option value={market.base_asset}>{market.base_asset}</option>
            <option value={market.quote_asset}>{market.quote_asset}</option>
          </select>
        </div>
        <div className="row">
          <label htmlFor={f("amount")}>Amount</label>
          <input
            id={f("amount")}
            inputMode="decimal"
            autoComplete="off"
            value={draft.amount}
            aria-invalid={prepared.error ? true : undefined}
            aria-describedby={f("amount-note")}
            onChange={(e) => set({ amount: e.target.value })}
          />
          <span className="unit">{draft.asset}</span>
        </div>
        <p className="note" id={f("amount-note")}>
          {prepared.error}
        </p>
        <div className="row">
          <label htmlFor={f("direction")}>Direction</label>
          <select
            id={f("direction")}
            value={draft.direction}
            onChange={(e) => set({ direction: e.target.value as TransferDirection })}
          >
            {DIRECTIONS.map((d) => (
              <option key={d.value} value={d.value}>
                {d.label}
              </option>
            ))}
          </select>
        </div>
        <p className="reserve" data-testid="transfer-source">
          {`From ${from}: ${source === null ? "—" : `${display(source, places)} ${draft.asset}`}`}
          {short && <strong className="warn"> insufficient</strong>}
        </p>
        <button type="submit" disabled={busy || prepared.request === null}>
          {busy ? "Moving…" : "Transfer"}
        </button>
        {error && (
          <p className="error" role="alert" data-testid="transfer-error">
            <code>{error.code}</code>: {error.message}
          </p>
        )}
        {done && !error && (
          <p className="ok" role="status" data-testid="transfer-done">
            {`${done.amount} ${done.asset} ${done.direction === "to_market" ? `to ${done.symbol}` : "to the wallet"}: ${done.status}`}
          </p>
        )}
      </form>
    </section>
  );
}

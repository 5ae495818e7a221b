import { display } from "../lib/decimal";
import { clock } from "../lib/format";
import type { Tape } from "../lib/tape";

const SHOWN = 40;

/** The market's last trades; the page owns the tape (one subscription feeds it and the
 * header's last price). */
export function TradeTape({ tape, pricePlaces, quantityPlaces }: { tape: Tape; pricePlaces: number; quantityPlaces: number }) {
  return (
    <section className="panel tape-panel" aria-label="Trade tape">
      <header className="panel-head">
        <h2>Trades</h2>
      </header>
      <table aria-label="Trades">
        <thead>
          <tr>
            <th scope="col" className="num">Price</th>
            <th scope="col" className="num">Quantity</th>
            <th scope="col">Time</th>
          </tr>
        </thead>
        <tbody>
          {tape.trades.slice(0, SHOWN).map((t) => (
            <tr key={t.trade_id} data-trade-id={t.trade_id} className={t.taker_side === "BUY" ? "bid" : "ask"}>
              <td className="num">{display(t.price, pricePlaces)}</td>
              <td className="num">{display(t.quantity, quantityPlaces)}</td>
              <td>{clock(t.time)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

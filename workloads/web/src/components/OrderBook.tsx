import { useEffect, useLayoutEffect, useMemo, useState } from "react";
import { top } from "../lib/book";
import { bookTracker } from "../lib/bookStats";
import { display } from "../lib/decimal";
import { useBook } from "../state/market";

const DEPTH = 15;

export function OrderBook({ symbol, pricePlaces, quantityPlaces }: { symbol: string; pricePlaces: number; quantityPlaces: number }) {
  const book = useBook(symbol);
  const levels = useMemo(() => top(book, DEPTH), [book]);
  const [readySeq, setReadySeq] = useState<number | null>(null);
  // Before paint: this state's levels are in the DOM.
  useLayoutEffect(() => bookTracker.drawn(book), [book]);
  // After the commit that put the first snapshot in the DOM.
  useEffect(() => {
    if (book.status === "live" && readySeq === null) setReadySeq(book.seq);
  }, [book, readySeq]);

  const asks = [...levels.asks].reverse();
  return (
    <section className="panel book-panel" aria-label="Book">
      <header className="panel-head">
        <h2>Order book</h2>
        <span className={`book-status ${book.status}`}>{book.status === "live" ? `seq ${book.seq}` : book.status}</span>
        {readySeq !== null && (
          <span className="ready" data-testid="book-ready" data-seq={readySeq}>
            ready
          </span>
        )}
      </header>
      <table aria-label="Order book" className="book">
        <thead>
          <tr>
            <th scope="col">Side</th>
            <th scope="col" className="num">Price</th>
            <th scope="col" className="num">Quantity</th>
          </tr>
        </thead>
        <tbody>
          {asks.map(([price, quantity]) => (
            <tr key={`a${price}`} className="ask">
              <td>ask</td>
              <td className="num">{display(price, pricePlaces)}</td>
              <td className="num">{display(quantity, quantityPlaces)}</td>
            </tr>
          ))}
          <tr className="spread" aria-hidden="true">
            <td colSpan={3} />
          </tr>
          {levels.bids.map(([price, quantity]) => (
            <tr key={`b${price}`} className="bid">
              <td>bid</td>
              <td className="num">{display(price, pricePlaces)}</td>
              <td className="num">{display(quantity, quantityPlaces)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

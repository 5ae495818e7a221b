// The candlestick chart (lightweight-charts, its attribution logo kept on). Prices become
// numbers here and only here: drawing needs coordinates, every label elsewhere is exact.
import {
  CandlestickSeries,
  createChart,
  type CandlestickData,
  type IChartApi,
  type ISeriesApi,
  type UTCTimestamp,
} from "lightweight-charts";
import { useEffect, useRef, useState } from "react";
import { INTERVALS, type Interval } from "../api/types";
import type { Bar } from "../lib/candles";
import { useCandles } from "../state/market";

function point(bar: Bar): CandlestickData<UTCTimestamp> {
  return {
    time: (bar.time / 1000) as UTCTimestamp,
    open: Number(bar.open),
    high: Number(bar.high),
    low: Number(bar.low),
    close: Number(bar.close),
  };
}

export function Chart({ symbol, tickSize, pricePlaces }: { symbol: string; tickSize: string; pricePlaces: number }) {
  const [interval, choose] = useState<Interval>("1m");
  const candles = useCandles(symbol, interval);
  const box = useRef<HTMLDivElement>(null);
  const chart = useRef<IChartApi | null>(null);
  const series = useRef<ISeriesApi<"Candlestick"> | null>(null);
  const [drawn, setDrawn] = useState<number | null>(null);

  useEffect(() => {
    if (!box.current) return;
    const c = createChart(box.current, {
      autoSize: true,
      layout: { background: { color: "#11161d" }, textColor: "#c9d1d9", attributionLogo: true },
      grid: { vertLines: { color: "#1c2430" }, horzLines: { color: "#1c2430" } },
      timeScale: { timeVisible: true, secondsVisible: false },
    });
    chart.current = c;
    series.current = c.addSeries(CandlestickSeries, {
      priceFormat: { type: "price", precision: pricePlaces, minMove: Number(tickSize) },
      upColor: "#26a269",
      downColor: "#e5534b",
      wickUpColor: "#26a269",
      wickDownColor: "#e5534b",
      borderVisible: false,
    });
    return () => {
      c.remove();
      chart.current = null;
      series.current = null;
    };
  }, [tickSize, pricePlaces]);

  // A full load: all bars, then the ready marker once the chart has drawn them.
  useEffect(() => {
    if (!candles.loaded || !series.current) return;
    series.current.setData(candles.bars.map(point));
    chart.current?.timeScale().scrollToRealTime();
    const frame = requestAnimationFrame(() => setDrawn(candles.bars.length));
    return () => cancelAnimationFrame(frame);
  }, [candles.version, candles.loaded]); // a full load only; socket updates go through `changed`

  // A socket update: just the bar that changed.
  useEffect(() => {
    const bar = candles.changed;
    const last = candles.bars[candles.bars.length - 1];
    if (!bar || !series.current || !last) return;
    series.current.update(point(bar), bar.time !== last.time);
  }, [candles.changed, candles.bars]);

  return (
    <section className="panel chart-panel" aria-label="Chart">
      <header className="panel-head">
        <h2>Chart</h2>
        <div role="group" aria-label="Interval" className="intervals">
          {INTERVALS.map((name) => (
            <button
              key={name}
              type="button"
              aria-pressed={name === interval}
              className={name === interval ? "on" : ""}
              onClick={() => {
                setDrawn(null);
                choose(name);
              }}
            >
              {name}
            </button>
          ))}
        </div>
        {drawn !== null && (
          <span
            className="ready"
            data-testid="chart-ready"
            data-candles={drawn}
            data-last-close={candles.bars[candles.bars.length - 1]?.close ?? ""}
          >
            {candles.bars.length} candles
          </span>
        )}
      </header>
      {candles.error && <p className="error">{candles.error}</p>}
      <div className="chart" data-testid="chart" ref={box} />
    </section>
  );
}

"""The market history: every trade and one-minute candle of the venue's markets in ClickHouse
(`writer.py` fills it from the core events topic; `store.py` answers the queries)."""

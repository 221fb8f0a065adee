from capstone_assets.assets.analytics import eod_quote_report
from capstone_assets.assets.eod_load import quotes, trades
from capstone_assets.assets.ingestion import ingestion

__all__ = ["eod_quote_report", "ingestion", "quotes", "trades"]

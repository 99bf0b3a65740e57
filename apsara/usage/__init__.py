"""Who spent what: the usage ledger, prices, budgets, and the bill a turn's calls go on."""
from .budgets import Budgets, BudgetError, parse_budgets
from .ledger import CallUsage, SqliteLedger, UsageLedger
from .prices import PriceError, PriceTable
from .service import Bill, UsageService

__all__ = ["Bill", "BudgetError", "Budgets", "CallUsage", "PriceError", "PriceTable", "SqliteLedger",
           "UsageLedger", "UsageService", "parse_budgets"]

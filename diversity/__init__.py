"""Diversity tools on plain types: ROUGE-L, embeddings, FAISS near-duplicate search, batch composition.

Never imports ``sedi`` or ``feedback``. Filled in by the diversity and Self-Instruct issues.
"""

from diversity.heuristics import ALPACA_RULES, SELF_INSTRUCT_RULES, HeuristicRules, first_failed_rule
from diversity.rouge import rouge_l_f1, tokenize
from diversity.rouge_filter import RougeFilter, RougeVerdict

__all__ = [
    "ALPACA_RULES",
    "SELF_INSTRUCT_RULES",
    "HeuristicRules",
    "RougeFilter",
    "RougeVerdict",
    "first_failed_rule",
    "rouge_l_f1",
    "tokenize",
]

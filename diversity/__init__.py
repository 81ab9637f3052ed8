"""Diversity tools on plain types: ROUGE-L, embeddings, FAISS near-duplicate search, batch composition.

Never imports ``sedi`` or ``feedback``. Filled in by the diversity and Self-Instruct issues.
"""

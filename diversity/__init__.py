"""Diversity tools on plain types: ROUGE-L, embeddings, FAISS near-duplicate search, batch composition.

Never imports ``sedi`` or ``feedback``. Importing this package stays light: ``faiss``, ``torch`` and
``sentence_transformers`` are imported only when an :class:`Encoder`, a :class:`VectorIndex` (and so a
:class:`DiversityFilter` with the embedding rule) or :func:`cluster` is first used.
"""

from diversity.batches import Leftover as Leftover
from diversity.batches import cluster as cluster
from diversity.batches import compose_batches as compose_batches
from diversity.batches import default_n_clusters as default_n_clusters
from diversity.decontaminate import Decontaminator as Decontaminator
from diversity.dedup import DiversityFilter as DiversityFilter
from diversity.dedup import DiversityVerdict as DiversityVerdict
from diversity.dedup import Rule as Rule
from diversity.embeddings import Encoder as Encoder
from diversity.embeddings import Precision as Precision
from diversity.embeddings import default_model_path as default_model_path
from diversity.heuristics import ALPACA_RULES as ALPACA_RULES
from diversity.heuristics import SELF_INSTRUCT_RULES as SELF_INSTRUCT_RULES
from diversity.heuristics import HeuristicRules as HeuristicRules
from diversity.heuristics import first_failed_rule as first_failed_rule
from diversity.index import IndexKind as IndexKind
from diversity.index import VectorIndex as VectorIndex
from diversity.metrics import BatchDiversity as BatchDiversity
from diversity.metrics import batch_diversity as batch_diversity
from diversity.metrics import clusters_covered as clusters_covered
from diversity.metrics import mean_pairwise_cosine_distance as mean_pairwise_cosine_distance
from diversity.metrics import topics_covered as topics_covered
from diversity.metrics import vendi_score as vendi_score
from diversity.rouge import rouge_l_f1 as rouge_l_f1
from diversity.rouge import tokenize as tokenize
from diversity.rouge_filter import RougeFilter as RougeFilter
from diversity.rouge_filter import RougeVerdict as RougeVerdict

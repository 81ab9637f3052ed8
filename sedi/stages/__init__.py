"""The loop's stages, each a function or small class the loop calls in order.

Generate (``prompts``, ``generation``, ``parsing``, ``instances``, ``repair``, ``shapes``), filter
(``filtering``, ``embeddings``), train (``training_batches``, ``student``), feed back (``seedpool``,
``steering``), stop (``stopping``); ``checks`` runs before any money is spent and ``resume`` reopens a run.
"""

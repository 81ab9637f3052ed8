"""``sedi export``: the kept tasks in every format (``formats``), which of them (``select``), the dataset card
beside them and the run facts every card tells (``card``), to the Hugging Face Hub (``hub``) and the student as
a merged model (``model``)."""

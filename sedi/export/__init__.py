"""``sedi export``: the kept tasks in every format (``formats``), to the Hugging Face Hub (``hub``) and the
student as a merged model (``model``)."""

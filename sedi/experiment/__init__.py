"""``sedi compare``: several runs side by side. ``arms`` names what each run changes, ``comparison`` runs the
arms and pools their ratios, ``parallel`` runs them in processes sharing one embedded teacher."""

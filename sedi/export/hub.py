"""``sedi export --push-to-hub``: the exported data file and its dataset card, in one commit to a Hub dataset repo.

The token comes from ``HF_TOKEN`` and goes only into the Authorization header of huggingface_hub's own requests;
sedi writes it nowhere (tests/test_export.py pushes to a local server speaking the Hub's protocol and searches
the export, the run and the library's home for it).
"""

from __future__ import annotations

import os

from sedi.exceptions import ConfigError, SediError
from sedi.export.formats import Exported


def check_push() -> str:
    """The token to push with, or a one-line refusal (called before anything is written)."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ConfigError("HF_TOKEN is not set: export HF_TOKEN=<a write token from huggingface.co/settings/tokens>")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise ConfigError("HF_HUB_OFFLINE is set: unset it (or set HF_HUB_OFFLINE=0) to push to the Hub")
    return token


def push_to_hub(exported: Exported, repo_id: str, private: bool) -> str:
    """Create the dataset repo (if needed) and commit the data file and its card in one commit; returns the URL.

    Files go through ``create_commit`` rather than ``upload_folder``: only the two files that belong together,
    never anything else lying in the directory."""
    token = check_push()
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

    api = HfApi(token=token)
    files = [exported.data, exported.card]
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)
        info = api.create_commit(
            repo_id,
            [CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path)) for path in files],
            commit_message=f"sedi export: {exported.data.name} and its dataset card",
            repo_type="dataset",
        )
    except HFValidationError as exc:
        raise ConfigError(f"--push-to-hub {repo_id!r}: {str(exc).splitlines()[0]}: use 'user/name'") from None
    except OfflineModeIsEnabled:
        raise ConfigError("HF_HUB_OFFLINE is set: unset it to push to the Hub") from None
    except (HfHubHTTPError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SediError(f"push to {repo_id} failed ({reason}): check HF_TOKEN (write access) and the repo id") from None
    return str(info.commit_url)

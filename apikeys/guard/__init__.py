"""The guard: one admission pipeline behind every door (ADR 0073).

The API's own views and host apps' views (`apikeys.api_base.ApiView`), the gateway's
forward-auth (`apikeys.gateway`) and the verify API (`apikeys.verify`) all ask
`admit(facts)` whether a key may make a request, and `settle(admission, status)` once
the response is known. `apikeys.guard.pipeline` reads the steps top to bottom;
`apikeys.guard.notes` is the typed per-request state.
"""

from apikeys.guard.notes import Notes, notes
from apikeys.guard.pipeline import Admission, Door, Facts, admit, settle

__all__ = ["Admission", "Door", "Facts", "Notes", "admit", "notes", "settle"]

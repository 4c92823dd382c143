"""Who may do what with an upload or a run: the one owner check of the dashboard, the job queue
and the workers. No streamlit import: ``HueyBackend.submit`` and ``app.jobs.resolve`` use it.

The rules (``allowed``), for a user (the signed-in address; None when sign-in is off)::

    who                                view  use in a job  cancel  retry  delete  export
    sign-in off (every visitor)        yes   yes           yes     yes    yes     yes
    the owner (who uploaded/submitted) yes   yes           yes     yes    yes     yes
    anyone, on what has no owner       yes   yes           no      no     no      yes
    a share link's holder, its run     yes   no            no      no     no      no
    anyone else                        no    no            no      no     no      no

Without sign-in everything is open to every visitor: that is the documented default for a
private instance. Things without an owner are the built-in data sets, the precomputed demo runs,
and whatever was made while sign-in was off (or by the ``flipscope jobs`` operator). A share
link carries a run's id *and* its share token (``share=``), which the run's owner gets from the
view's "share" box; the run id alone (it shows in reports, run lists, logs) grants nothing. A
link lets its holder view that one run, with the data set and model the views need to draw it
(read-only, through the run: ``Gate.run`` then the run's own specs), and nothing else: no job on
its upload, no cancel, retry, delete or export.

A refusal raises ``NotYours``, whose message is the same whether the id exists or not, so
nobody learns another user's ids by trying them.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.jobs.store import Run, RunNotFound, RunStore

if TYPE_CHECKING:
    from app.uploads import UploadInfo, UploadStore


class Action(enum.Enum):
    VIEW = "view"  # open a run's results, or an upload's data and model on a page
    USE = "use"  # run a job on it: a data set, a model, a run's model or surrogate
    CANCEL = "cancel"
    RETRY = "retry"
    DELETE = "delete"
    EXPORT = "export"  # the HTML report and PNG figures of a run


VIEW, USE, CANCEL, RETRY, DELETE, EXPORT = Action
# What everybody may do with something that has no owner (demo runs, built-in data sets).
PUBLIC = frozenset({VIEW, USE, EXPORT})
# A record that cannot be read has no trustworthy owner: only full access reaches it.
UNKNOWN_OWNER = object()
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class NotYours(LookupError):
    """No such run or upload, or this user may not do that with it: one message for both."""

    def __init__(self, what: str, ident: object) -> None:
        shown = repr(ident) if isinstance(ident, str) and _ID.fullmatch(ident) else "with that id"
        super().__init__(f"no {what} {shown}, or it is not yours")


def allowed(user: str | None, action: Action, owner: object, *, linked: bool = False) -> bool:
    """The rule table of the module docstring.

    Parameters
    ----------
    user : the signed-in user; None when sign-in is off (and for the operator's command line),
        which may do everything.
    action : what is asked for.
    owner : the run's or upload's owner (None: nobody's, public; ``UNKNOWN_OWNER``: unreadable).
    linked : the user holds this run's share link (its token matched).
    """
    if user is None:
        return True
    if owner is UNKNOWN_OWNER:
        return False
    if owner == user:
        return True
    if owner is None:
        return action in PUBLIC
    return linked and action is VIEW


def _owner(run: Run) -> object:
    # store.get returns an unreadable record as a failed run of kind "unknown" without an owner;
    # that must not make someone's damaged run public.
    return UNKNOWN_OWNER if run.kind == "unknown" else run.owner


class Gate:
    """One user's access to the run store and the upload store. Every read or change of a run
    or an upload on a user's behalf goes through these methods, which raise ``NotYours``.

    Parameters
    ----------
    user : the signed-in user, None when sign-in is off (everything open) or for the operator.
    runs, uploads : the stores; None for the ones the settings name (built on first use, so
        checking a run-only job never imports the upload machinery).
    links : run id -> share token of the share links this session was opened with.
    """

    def __init__(
        self,
        user: str | None,
        runs: RunStore | None = None,
        uploads: UploadStore | None = None,
        links: Mapping[str, str] | None = None,
    ) -> None:
        self.user = user
        self._runs = runs
        self._uploads = uploads
        self.links = dict(links or {})

    # ------------------------------------------------------------------ runs
    @property
    def store(self) -> RunStore:
        if self._runs is None:
            from app.config import settings

            self._runs = RunStore(settings().runs_dir)
        return self._runs

    def linked(self, run: Run) -> bool:
        """Whether this session holds the run's share link (constant-time token comparison)."""
        token = self.links.get(run.id)
        return bool(token and run.share_token) and hmac.compare_digest(
            str(token), str(run.share_token)
        )

    def may(self, run: Run, action: Action = VIEW) -> bool:
        return allowed(self.user, action, _owner(run), linked=self.linked(run))

    def run(self, run_id: str, action: Action = VIEW) -> Run:
        """The run, if this user may do ``action`` with it; ``NotYours`` otherwise."""
        try:
            run = self.store.get(run_id)
        except RunNotFound:
            raise NotYours("run", run_id) from None
        if not self.may(run, action):
            raise NotYours("run", run_id)
        return run

    def runs(
        self, status: str | None = None, kind: str | None = None, action: Action = VIEW
    ) -> list[Run]:
        """The runs this user may do ``action`` with, newest first (all of them without sign-in)."""
        return [r for r in self.store.list(status=status, kind=kind) if self.may(r, action)]

    def share_token(self, run: Run) -> str | None:
        """The token a share link of ``run`` carries besides its id: the owner's (created on first
        ask), or the one this session was opened with. None where no token is needed (sign-in
        off, a run without owner) or this user may not pass the run on."""
        if self.user is None or run.owner is None:
            return None
        if self.linked(run):
            return self.links[run.id]
        if run.owner == self.user:
            return self.store.share_token(run.id)
        return None

    # ------------------------------------------------------------------ uploads
    @property
    def uploads(self) -> UploadStore:
        if self._uploads is None:
            from app.uploads import upload_store

            self._uploads = upload_store()
        return self._uploads

    def upload(self, upload_id: str, action: Action = VIEW) -> UploadInfo:
        """The upload's record, if this user may do ``action`` with it; ``NotYours`` otherwise.
        Share links never reach an upload directly: a link's holder sees the run's data set
        and model only through the run."""
        from app.uploads import UploadNotFound

        try:
            info = self.uploads.info(upload_id)
        except UploadNotFound:
            raise NotYours("upload", upload_id) from None
        if not allowed(self.user, action, info.owner):
            raise NotYours("upload", upload_id)
        return info

    # ------------------------------------------------------------------ jobs
    def check_job(
        self,
        dataset: Mapping[str, Any],
        model: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Refuse a job that names an upload or a run this user may not use: the data set, the
        model (an upload, or the model of a run) and the surrogate of an IG job. Takes the
        normalised specs (``app.jobs.kinds.validate``)."""
        if "upload" in dataset:
            self.upload(dataset["upload"], USE)
        for key, value in (model or {}).items():
            if key == "upload":
                self.upload(value, USE)
            elif key == "run" or key.endswith("_run"):
                self.run(value, USE)
        surrogate = (params or {}).get("surrogate")
        if surrogate:
            from app.jobs.resolve import surrogate_spec

            self.run(surrogate_spec(surrogate).ref, USE)

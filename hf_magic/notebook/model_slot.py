"""ModelSlot: which chat model a session is on, and the one to go back to while a new endpoint is unproven."""

from __future__ import annotations

import gc

from ..chat_models import ChatHuggingFace
from ..errors import HfMagicError
from ..progress import ProgressCallback
from .model_spec import ModelSpec, load_chat_model, release_chat_model


class ModelSlot:
    """Holds a session's loaded chat model and the spec it was loaded from.

    A new model is loaded before the old one is let go, so a failed load leaves the slot as it was. An endpoint is
    built without contacting its server, so it stays unproven until its first reply: until then the model it
    replaced is kept (``fallback``) and ``revert`` goes back to it. A model the slot lets go of is released
    (``model_spec.release_chat_model``): an engine hf_magic started for it stops. The slot does no locking: its
    session does.
    """

    def __init__(self, spec: ModelSpec | None = None) -> None:
        self.spec = spec or ModelSpec()
        """What the session is on, or will load next."""
        self.chat_model: ChatHuggingFace | None = None
        self.loaded_spec: ModelSpec | None = None
        self._fallback: tuple[ChatHuggingFace | None, ModelSpec] | None = None

    @property
    def current_spec(self) -> ModelSpec:
        """The loaded model's spec, else the one to load."""
        return self.loaded_spec if self.chat_model is not None and self.loaded_spec is not None else self.spec

    def still_on(self, spec: ModelSpec | None = None) -> str:
        """One sentence for error messages: which model the session is still on."""
        spec = spec or self.current_spec
        loaded = self.chat_model is not None and spec == self.loaded_spec
        return f"The session is still on {spec.label()}{'' if loaded else ', not loaded yet'}."

    def load(self, spec: ModelSpec, progress: ProgressCallback) -> tuple[ChatHuggingFace, bool]:
        """The chat model for ``spec``, loaded unless it already is; and whether the slot changed.

        Raises:
            HfMagicError: the model cannot be loaded; the message says which model the session is still on.
        """
        if self.chat_model is not None and spec == self.loaded_spec:
            self.spec = spec
            return self.chat_model, False
        previous_model, previous_spec = self._fallback or (None, None)
        if previous_model is not None and previous_spec == spec:
            # Back to the model an untried endpoint replaced: it is still in memory.
            untried = self.chat_model
            self._set(previous_model, spec)
            self._fallback = None
            self._let_go(untried)
            return previous_model, True
        current = self.current_spec
        try:
            chat_model = load_chat_model(spec, progress)
        except HfMagicError as exc:
            raise noted(exc, self.still_on(current)) from exc
        except Exception as exc:
            message = f"Loading {spec.describe()} failed: {type(exc).__name__}: {exc}. {self.still_on(current)}"
            raise HfMagicError(message) from exc
        replaced = self.chat_model
        if spec.backend == "endpoint":
            # Unproven until it answers: keep what to go back to (the first model an untried chain replaced).
            self._fallback = self._fallback or (self.chat_model, current)
        else:
            self.unload()
        self._set(chat_model, spec)
        self._let_go(replaced)  # a middle link of an untried chain is kept by nobody
        return chat_model, True

    def use(self, chat_model: ChatHuggingFace, spec: ModelSpec) -> None:
        """Put an already built chat model in the slot, as if ``spec`` had been loaded."""
        self.unload()
        self._set(chat_model, spec)

    def proven(self) -> None:
        """The model answered: the one it replaced can go."""
        replaced, self._fallback = self._fallback, None
        self._let_go(replaced[0] if replaced else None)

    def revert(self) -> ModelSpec | None:
        """Go back to the model an endpoint replaced, after the endpoint's first reply failed; the spec gone back
        to, or ``None`` when there was nothing to go back to."""
        if self._fallback is None:
            return None
        previous_model, previous_spec = self._fallback
        self._fallback = None
        failed, self.chat_model, self.spec = self.chat_model, previous_model, previous_spec
        self.loaded_spec = previous_spec if previous_model is not None else None
        self._let_go(failed)
        return previous_spec

    def unload(self) -> bool:
        """Drop the loaded model (and any fallback) and give the memory back; whether anything was loaded."""
        if self.chat_model is None and self._fallback is None:
            return False
        held = (self.chat_model, self._fallback[0] if self._fallback else None)
        self.chat_model, self.loaded_spec, self._fallback = None, None, None
        self._let_go(*held)
        free_memory()
        return True

    def _set(self, chat_model: ChatHuggingFace, spec: ModelSpec) -> None:
        self.chat_model, self.loaded_spec, self.spec = chat_model, spec, spec

    def _let_go(self, *models: ChatHuggingFace | None) -> None:
        """Release the models the slot no longer holds (neither loaded nor kept to go back to)."""
        kept = (self.chat_model, self._fallback[0] if self._fallback else None)
        for model in models:
            if model is not None and not any(model is held for held in kept):
                release_chat_model(model)


def noted(error: HfMagicError, note: str) -> HfMagicError:
    """``error`` with ``note`` appended to its line, of the same type where that type takes a message."""
    try:
        noted_error = type(error)(f"{error} {note}")
    except TypeError:  # a subclass built from other arguments
        noted_error = HfMagicError(f"{error} {note}")
    noted_error.__dict__.update(error.__dict__)
    return noted_error


def free_memory() -> None:
    """Collect the dropped model now, and hand a GPU's cached blocks back."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass

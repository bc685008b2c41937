"""Hooks: how an upper layer provides a service to a lower one without an upward import.

graphc's modules import downward only (core -> ops -> autodiff -> passes -> compile ->
function -> serialization -> export; see docs/architecture.md and tests/test_layering.py).
Where a lower module needs something only an upper one can do (a Tensor's ``x + y`` needs
the ops, ``gc.grad`` wants the stabilizer from the passes, ``Function.to_dot`` the exporter),
the lower module declares a :class:`Hook` and calls through it, and the upper package
provides the implementation when it is imported. ``import graphc`` loads the upper layers
lazily (on first use), so a hook that is not filled yet imports its provider the first time it
is used.
"""

from __future__ import annotations

__all__ = ["Hook"]

_UNSET = object()


class Hook:
    """A named slot for a service that the package ``provider`` fills with :meth:`provide`.

    Call the hook to call the implementation (``hook(*args)``), or read attributes through it
    when the implementation is a namespace (``hook.add`` is ``implementation.add``). Before it
    is provided, the first use imports ``provider``; if that does not fill it, a hook with a
    ``default`` uses the default and one without raises a clear error.
    """

    __slots__ = ("service", "provider", "implementation", "provided")

    def __init__(self, service: str, provider: str, default=_UNSET) -> None:
        self.service = service
        self.provider = provider
        self.implementation = default
        #: whether the provider has filled the hook (a default does not count)
        self.provided = False

    def provide(self, implementation):
        """Fill the hook (the provider calls this at import); returns ``implementation``."""
        self.implementation = implementation
        self.provided = True
        return implementation

    def resolve(self):
        """The implementation (importing the provider on first use). Reading a namespace's names
        from it (``hook.resolve().add``) is about 10x faster than through the hook (``hook.add``),
        whose attribute forwarding runs only after Python's own lookup has failed."""
        if not self.provided:
            # the provider loads lazily (graphc/__init__.py): importing it fills the hook. Its name
            # is fixed where the hook is declared, never taken from data.
            import importlib

            importlib.import_module(self.provider)
        implementation = self.implementation
        if implementation is _UNSET:
            raise RuntimeError(f"{self.service} is provided by {self.provider}, which is not imported yet "
                               f"(import graphc)")
        return implementation

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, name: str):
        # only reached for names that are not slots: forward to the provided namespace
        return getattr(self.resolve(), name)

    def __repr__(self) -> str:
        state = "provided" if self.provided else "not provided"
        return f"<Hook {self.service!r} from {self.provider} ({state})>"

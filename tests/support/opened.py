"""`qa-daemon run` stopped right after it opened its store, before it loads a model: for tests of how the
daemon opens the store (its settings, its refusals) that need no model and run no threads of it.

    stop_once_the_store_is_open(monkeypatch)
    with pytest.raises(StoreOpened) as opened:
        cli("--config", config, "run", "--watch", folder)
    opened.value.store  # the daemon's open Store
"""

from __future__ import annotations


class StoreOpened(Exception):  # noqa: N818 - not an error: the moment the test waits for
    """Raised where the daemon would go on to load its model; `store` is the store it opened."""

    def __init__(self, store):
        super().__init__(store.url)
        self.store = store


def stop_once_the_store_is_open(monkeypatch) -> None:
    from daemon.app import App

    def stop_here(self, card):
        raise StoreOpened(self.store)

    monkeypatch.setattr(App, "startup_model", stop_here)

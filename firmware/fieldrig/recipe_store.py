"""The running recipe and its cursor on flash, so a reset can resume or safely abort it.

Two files, both JSON, both written like the config (``<file>.tmp``, ``os.sync()``, then
``os.rename`` over the file: the rename is the commit, atomic on LittleFS and POSIX):

- ``<path>``: ``{"store": 1, "recipe": {...}}``, written once per ``recipe_start``;
- ``<path>.cursor``: ``{"store": 1, "cursor": RecipeRunner.cursor()}``, written at every
  step change and periodically (small: a few hundred bytes, so frequent writes cost
  little flash wear).

The cursor carries the recipe's fingerprint, so a cursor is never applied to another
recipe (``RecipeRunner.resume`` refuses it). ``path`` None keeps nothing (RAM only).
"""

import json
import os

STORE_VERSION = 1


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    sync = getattr(os, "sync", None)
    if sync is not None:
        sync()
    os.rename(tmp, path)


def _read_json(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    try:
        return json.loads(text)
    except Exception:  # any parse failure means a corrupt file: treat as absent
        return None


class RecipeStore:
    def __init__(self, path):
        self.path = path
        self.cursor_path = None if path is None else path + ".cursor"
        self.saves = 0
        self.errors = 0  # failed writes (flash full, removed card...): counted, reported

    def has_saved(self):
        """True when a recipe file exists (cheap: one stat, no parsing)."""
        return self.path is not None and _exists(self.path)

    def save_recipe(self, recipe):
        if self.path is None:
            return True
        try:
            _atomic_write(self.path, json.dumps({"store": STORE_VERSION, "recipe": recipe}))
            self.saves += 1
            return True
        except OSError:
            self.errors += 1
            return False

    def save_cursor(self, cursor):
        if self.cursor_path is None:
            return True
        try:
            _atomic_write(self.cursor_path,
                          json.dumps({"store": STORE_VERSION, "cursor": cursor}))
            self.saves += 1
            return True
        except OSError:
            self.errors += 1
            return False

    def load(self):
        """(recipe, cursor) from flash: either may be None (absent, corrupt or another
        store version). Stale temp files of an interrupted save are removed."""
        if self.path is None:
            return None, None
        cursor_path = self.path + ".cursor"
        for p in (self.path + ".tmp", cursor_path + ".tmp"):
            if _exists(p):
                try:
                    os.remove(p)
                except OSError:
                    pass
        doc = _read_json(self.path)
        recipe = None
        if isinstance(doc, dict) and doc.get("store") == STORE_VERSION:
            recipe = doc.get("recipe")
        doc = _read_json(cursor_path)
        cursor = None
        if isinstance(doc, dict) and doc.get("store") == STORE_VERSION:
            cursor = doc.get("cursor")
        return recipe, cursor

    def clear(self):
        """Forget the stored recipe (nothing to resume)."""
        if self.path is None:
            return
        for p in (self.cursor_path, self.path):
            try:
                os.remove(p)
            except OSError:
                pass

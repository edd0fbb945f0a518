"""The pluggy markers, kept apart so every module can import them without cycles."""

from __future__ import annotations

import pluggy

from adconnect.hookspecs import PROJECT_NAME

#: Marks a method or function as an implementation of an adconnect hook.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

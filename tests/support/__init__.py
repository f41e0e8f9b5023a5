"""Fixtures and helpers shared by several test folders (the root conftest puts this folder's parent on
sys.path and registers the fixtures); each module holds one family of session-scoped artefacts."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
VERSION = "v1.0-mini"  # the nuScenes version of every synthetic world

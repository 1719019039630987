"""The model-card template, shipped as package data so `cmhash publish` works from a wheel."""

"""Losses as pure functions of arrays (no model calls), each tested against torch."""

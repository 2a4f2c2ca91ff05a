"""Decisions: plain functions over plain values and injected data-access objects."""

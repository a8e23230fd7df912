"""Shipped YAML presets (model/, train/, deepspeed/, eval/), installed as package data `unimodal.configs`."""

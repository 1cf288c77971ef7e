"""Inference: the engine interface, the llama.cpp engine, and the actor that owns it."""

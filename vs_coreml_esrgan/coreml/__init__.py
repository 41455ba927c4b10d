"""Core ML: conversion to ML Programs, reading packages, and running them.

Conversion and package reading work on any machine (coremltools converts on Linux);
prediction needs macOS (see ``backends/coreml_backend.py``); ``mil.py`` executes a saved
program with PyTorch anywhere.
"""

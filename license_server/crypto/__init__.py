"""Cryptographic building blocks: signing keys and JWKS, field encryption, keyed hashes.

Imports nothing else of this package (DESIGN.md layering), so every layer may use it.
"""

"""The business rules: key format, lifecycle, bindings, the verify decision.

Plain Python: no HTTP and no SQL strings here (DESIGN.md layering: web -> licensing -> db).
"""

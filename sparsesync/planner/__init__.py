"""The planner: introspect a table, pre-scan its key density, and emit a reviewable JSON plan.

The planner writes nothing but the plan file and its histogram cache. The executor reads plans only
through :mod:`sparsesync.planner.plan`, the contract.
"""

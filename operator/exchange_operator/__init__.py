"""The exchange's Kubernetes operator (kopf): Market and SafetyMode custom resources.

A Market becomes a fenced matcher (StatefulSet, Lease, headless Service, PDB, RBAC,
NetworkPolicies) and joins its namespace's venue: one gateway and one ledger shared by the
namespace's Markets. SafetyModes restrict a market's trading; a ledger breach becomes one.
"""

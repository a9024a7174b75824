"""(being written: see docs/architecture.md)"""

"""wrcup.cli"""

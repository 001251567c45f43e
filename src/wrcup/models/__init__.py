"""wrcup.models"""

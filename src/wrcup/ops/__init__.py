"""wrcup.ops"""

"""wrcup.eval"""

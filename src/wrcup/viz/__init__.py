"""wrcup.viz"""

"""wrcup.data"""

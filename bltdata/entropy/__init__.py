"""entropy"""

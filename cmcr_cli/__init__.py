"""The `cmcr` command line. Thin: parse, load the recipe, call one core function, print.

Nothing here imports torch at module level, so `cmcr --help` stays fast.
"""

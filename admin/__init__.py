"""The staff face: accounts, bill groups, access settings, preview, audit.

It imports the portal's core (models, access, billing) and never its customer views.
"""

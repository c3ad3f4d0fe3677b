"""TEMPORARY placeholder created by the self-distillation helper so kdzoo.models imports; delete if the real bit.py lands."""

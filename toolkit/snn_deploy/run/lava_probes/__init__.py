"""Lava processes of our own, kept in a folder of their own.

Lava 0.10 finds ProcessModels by importing every module in the folder of a Process
(``ProcGroupDiGraphs._find_proc_models``), so this folder holds nothing else.
"""

"""Operations commands: ``truecount status | trace | replay | reconcile``."""

"""State databases (outbox, dose history, QC store, folder-intake state): integrity checks and recovery."""

from agent.statedb.guard import Recovery, Spec, check, ensure_sound, is_damage, move_aside, recover, recover_in_use

__all__ = ["Recovery", "Spec", "check", "ensure_sound", "is_damage", "move_aside", "recover", "recover_in_use"]

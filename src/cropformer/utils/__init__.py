"""Framework-free helpers of every floor: errors, logging, hardware, atomic writes, id maps."""

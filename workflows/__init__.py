"""law tasks of hsbi: parameters, requirements, targets and a call into the hsbi library."""

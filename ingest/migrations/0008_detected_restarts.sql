-- Index restarts that the engines find in the readings (ingest/plausibility.py: a meter's index
-- dropping to near zero is a new meter or new electronics, DESIGN.md section 5). The engines
-- record each one as an in-place replacement, so that billing (which links two determinants
-- through meter_replacements) never sees the restart as negative consumption. `detected` tells
-- them from registry events: the engines own detected rows and remove one when the readings no
-- longer show that restart; a recorded event is never touched by them.
ALTER TABLE meter_replacements ADD COLUMN detected boolean NOT NULL DEFAULT false;

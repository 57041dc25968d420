"""Pictures and numbers for people: drawing boxes (:mod:`.visualize`), plots (:mod:`.plots`) and the per-class
validation table (:mod:`.report`)."""

"""The roles, one file each, as plain Python classes (no Ray): constructible and callable in any
process. A backend (:mod:`distrl.backends`) places them, in Ray actors or in the driver.

    rollout.py    Rollout     generation engine (vLLM or HF generate)
    reward.py     Reward      scores responses (+ overlong shaping)
    reference.py  Reference   frozen initial policy: reference log-probs
    critic.py     Critic      value model and its update
    learner.py    Learner     the policy: old log-probs, update, weights for the engines, checkpoints
    batches.py    BatchRole   assembles batches, token rewards and advantages
    update.py     the update loop the learner and the critic share
"""

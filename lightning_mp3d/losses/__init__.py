"""Loss functions of every stage, pure tensor code (no Lightning): the systems call them and log the results.

- ``teacher``: Cao et al.'s heatmap + PAF regression with intermediate supervision (stage 0).
- ``aae``: the pose AAE's L_cyc and L_adv (stage 1, paper suppl. 1).
- ``cross_modal``: L_distl, L_recon, L_adapt, L_ss, the root heatmap loss and the weak/full supervision L_2D / L_3D
  (stages 2-5, paper 3.2 and 3.3).
"""
